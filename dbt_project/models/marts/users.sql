{#- One row per user in the run date's snapshot, with the day's activity. Replaces the day (the first build loads every day up to it). -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

with activity as (
    select ds, user_id, count(*) as events, count(distinct session_id) as sessions
    from {{ ref('stg_events') }}
    where {{ days_to_build() }}
    group by ds, user_id
)

select
    u.ds,
    u.user_id,
    u.signup_date,
    u.region,
    u.device,
    coalesce(a.events, 0)::bigint as events,
    coalesce(a.sessions, 0)::bigint as sessions
from {{ ref('stg_users') }} as u
left join activity as a using (ds, user_id)
where {{ days_to_build('u.ds') }}
