{#- Landed events that break a rule, or repeat an earlier event_id with other content
    (conflicting_duplicate), with the reason and where they landed; a conflicting duplicate also
    names the first landing of its id (first_ds, first_file, first_row). Replaces the day (the first
    build loads every day up to it). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_run_date() }}",
) }}

select
    event_id, event_time, user_id, item_id, event_type, scene, query, position, session_id,
    price, category_id, ds, event_date, is_late, reject_reason,
    landed_file, landed_row, first_ds, first_file, first_row
from {{ ref('stg_events__landed') }}
where reject_reason is not null and {{ days_to_build() }}
