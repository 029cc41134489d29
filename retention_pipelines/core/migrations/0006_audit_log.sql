-- Who changed what the platform decides with, and what it did with personal data: model
-- promotions, rollbacks and gate refusals, API keys created and revoked, CRM hand-offs,
-- erasures (by pseudonym, never the customer id) and retention purges.
create schema if not exists ops;

create table if not exists ops.audit_log (
    audit_id     bigint generated always as identity primary key,
    recorded_at  timestamptz not null default now(),
    kind         text        not null check (kind in (
                     'promotion', 'rollback', 'gate_refusal',
                     'api_key_created', 'api_key_revoked',
                     'crm_handoff', 'erasure', 'purge')),
    actor        text        not null,  -- the OS user of a command, or the Dagster run
    subject      text        not null,  -- a model version, a key name, a date, a pseudonym, a table
    reason       text            null,
    details      jsonb       not null default '{}'::jsonb
);
create index if not exists audit_log_recorded_at on ops.audit_log (recorded_at);
create index if not exists audit_log_kind on ops.audit_log (kind, recorded_at);

comment on table ops.audit_log is
    'Append-only record of model promotions, rollbacks, gate refusals, API keys, CRM hand-offs, '
    'erasures and retention purges: when, by whom, what and why.';

-- Append-only for everybody who writes through the platform: privileges keep a role that
-- does not own the table from changing rows, and the triggers refuse it to the owner and to
-- superusers too (who bypass privileges).
create or replace function ops.refuse_audit_change() returns trigger
language plpgsql as $$
begin
    raise exception 'ops.audit_log is append-only: % is not allowed', tg_op
        using errcode = 'insufficient_privilege';
end;
$$;

drop trigger if exists audit_log_no_update_or_delete on ops.audit_log;
create trigger audit_log_no_update_or_delete
    before update or delete on ops.audit_log
    for each row execute function ops.refuse_audit_change();

drop trigger if exists audit_log_no_truncate on ops.audit_log;
create trigger audit_log_no_truncate
    before truncate on ops.audit_log
    for each statement execute function ops.refuse_audit_change();

revoke update, delete, truncate on ops.audit_log from public;
revoke update, delete, truncate on ops.audit_log from current_user;
