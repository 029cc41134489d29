-- The suppression list: the customers erased on request, which ingestion leaves out of every
-- landing file that still holds them. A customer is kept here by full pseudonym only (the
-- HMAC-SHA256 of the id under RETENTION_PSEUDONYM_KEY, 64 hexadecimal characters), never by
-- id: ingestion computes each row's pseudonym and drops the rows whose pseudonym is listed.
create table if not exists ops.erased_customers (
    pseudonym  text        not null primary key check (pseudonym ~ '^[0-9a-f]{64}$'),
    erased_at  timestamptz not null default now(),  -- the latest erasure
    -- That erasure's entry of ops.audit_log. No foreign key: the log is append-only, so the
    -- entry cannot go, and a key would turn its TRUNCATE trigger's refusal into another error.
    audit_id   bigint      not null
);

comment on table ops.erased_customers is
    'Customers erased on request, by full pseudonym: ingestion leaves their rows out until '
    '`retention forget --allow-again` lifts the suppression.';

-- Ingestion counts the rows it left out; every row read still ends in exactly one place.
alter table raw.ingestion_runs
    add column if not exists rows_suppressed integer not null default 0
        check (rows_suppressed >= 0);

-- 0001 declared the reconciliation inline, unnamed: found by what it checks, replaced by a
-- named one that counts the suppressed rows too.
do $$
declare
    found name;
begin
    for found in
        select conname from pg_constraint
        where conrelid = 'raw.ingestion_runs'::regclass and contype = 'c'
          and pg_get_constraintdef(oid) like '%rows_read = %duplicates_collapsed%'
    loop
        execute format('alter table raw.ingestion_runs drop constraint %I', found);
    end loop;
end;
$$;
alter table raw.ingestion_runs add constraint ingestion_runs_rows_reconcile
    check (rows_read = rows_valid + rows_rejected + duplicates_collapsed + rows_suppressed);

-- A lifted suppression is an entry of its own in the audit log (0006 declared the kinds
-- inline, unnamed).
do $$
declare
    found name;
begin
    for found in
        select conname from pg_constraint
        where conrelid = 'ops.audit_log'::regclass and contype = 'c'
          and pg_get_constraintdef(oid) like '%kind%'
    loop
        execute format('alter table ops.audit_log drop constraint %I', found);
    end loop;
end;
$$;
alter table ops.audit_log add constraint audit_log_kind_check check (kind in (
    'promotion', 'rollback', 'gate_refusal',
    'api_key_created', 'api_key_revoked',
    'crm_handoff', 'erasure', 'erasure_lifted', 'purge'));
