{#- Landed events that repeat an earlier landing of their event_id with the same content: counted,
    never staged. `first_*` names the landing that was kept (earliest ds, then file, then row).
    Replaces the day (the first build loads every day up to it). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_run_date() }}",
) }}

select event_id, ds, landed_file, landed_row, first_ds, first_file, first_row
from {{ ref('stg_events__landed') }}
where landing = 'duplicate' and {{ days_to_build() }}
