-- The CRM hand-off: the customers the retention team should contact, one task per customer
-- per scored date, kept until the dispatcher has delivered them (or given up on them).
-- A date's pending rows are replaced when the date is selected again; sent and dead-lettered
-- rows are never changed by a selection, so a task is never handed off twice.
create table if not exists ml.crm_outbox (
    snapshot_date         date             not null,
    customer_id           text             not null,
    idempotency_key       text             not null unique,  -- stable per (date, customer)
    handoff_reason        text             not null check (handoff_reason in ('entered_high', 'risk_rose')),
    churn_probability     double precision not null check (churn_probability between 0 and 1),
    previous_probability  double precision     null check (previous_probability between 0 and 1),
    risk_band             text             not null check (risk_band in ('low', 'medium', 'high')),
    monthly_charges       numeric(10,2)    not null,
    revenue_at_risk       double precision not null,  -- churn_probability x monthly_charges
    priority              integer          not null,  -- 1: the day's most revenue at risk
    talking_points        jsonb            not null,  -- the score's top reasons, with contributions
    model_name            text             not null,
    model_version         text             not null,
    status                text             not null default 'pending'
                              check (status in ('pending', 'sent', 'dead_letter')),
    attempts              integer          not null default 0,  -- requests that carried the task
    last_status_code      integer              null,  -- the receiver's last HTTP status
    last_error            text                 null,  -- the last failure, with the body answered
    destination           text                 null,  -- where it was sent: webhook (no query) or CSV
    created_at            timestamptz      not null default now(),
    last_attempt_at       timestamptz          null,
    sent_at               timestamptz          null,
    primary key (snapshot_date, customer_id),
    constraint crm_outbox_sent_at check ((status = 'sent') = (sent_at is not null))
);
create index if not exists crm_outbox_pending on ml.crm_outbox (snapshot_date, priority, customer_id)
    where status = 'pending';
-- The cooldown: a customer's hand-offs around a date.
create index if not exists crm_outbox_customer on ml.crm_outbox (customer_id, snapshot_date desc);

comment on table ml.crm_outbox is
    'Retention tasks handed to the CRM: who to contact and why (talking_points), in priority '
    'order, with the delivery status of each (pending, sent, dead_letter).';
