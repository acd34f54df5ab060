{#- Daily user snapshots, typed, one row per (ds, user_id) (ephemeral). -#}
{{ config(materialized='ephemeral') }}

select
    cast(ds as date) as ds,
    cast(user_id as varchar) as user_id,
    cast(signup_date as date) as signup_date,
    cast(region as varchar) as region,
    cast(device as varchar) as device
from {{ source('landing', 'users') }}
where user_id is not null
qualify row_number() over (partition by ds, user_id order by signup_date) = 1
