{#- Valid events of each day built: the first landing of each event_id (over the whole history, see
    stg_events__landed) that breaks no staging rule. Replaces the day (the first build loads every
    day up to it).
    Late-event policy: `ds` is the day an event LANDED (its folder). An event whose business date is
    before ds (is_late) counts in the day it landed, never in a past day: features as of D then use
    exactly what was known at the end of D, and rerunning a past day gives the same tables. Events
    more than `late_days_allowed` days late are quarantined (late_beyond_allowed). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_run_date() }}",
) }}

select
    event_id, event_time, user_id, item_id, event_type, scene, query, position, session_id,
    price, category_id, ds, event_date, is_late
from {{ ref('stg_events__landed') }}
where landing = 'first' and reject_reason is null and {{ days_to_build() }}
