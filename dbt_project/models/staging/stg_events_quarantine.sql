{#- Landed events that break a rule, with the reason. Replaces the day (the first build loads every day up to it). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_run_date() }}",
) }}

select *
from {{ ref('stg_events__landed') }}
where reject_reason is not null and {{ days_to_build() }}
