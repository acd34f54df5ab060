{#- Daily user snapshots, typed, one row per (ds, user_id). Incremental by ds: a night reads only its
    day's accepted files (the first build: every day up to the run date). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_run_date() }}",
) }}

with landed as (
    {{ read_landed(landed_files('users'), ['user_id', 'signup_date', 'region', 'device']) }}
)

select
    ds,
    cast(user_id as varchar) as user_id,
    cast(signup_date as date) as signup_date,
    cast(region as varchar) as region,
    cast(device as varchar) as device
from landed
where user_id is not null and {{ days_to_build() }}
qualify row_number() over (partition by ds, user_id order by signup_date) = 1
