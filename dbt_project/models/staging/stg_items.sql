{#- Daily item snapshots, typed, one row per (ds, item_id). Incremental by ds: a night reads only its
    day's accepted files (the first build: every day up to the run date). -#}
{{ config(
    materialized='incremental',
    incremental_strategy='append',
    pre_hook="{{ delete_run_date() }}",
) }}

with landed as (
    {{ read_landed(landed_files('items'), ['item_id', 'category_id', 'category_path', 'brand', 'price',
        'title', 'in_stock']) }}
)

select
    ds,
    cast(item_id as varchar) as item_id,
    cast(category_id as varchar) as category_id,
    cast(category_path as varchar) as category_path,
    cast(brand as varchar) as brand,
    cast(price as double) as price,
    cast(title as varchar) as title,
    coalesce(cast(in_stock as boolean), true) as in_stock
from landed
where item_id is not null and {{ days_to_build() }}
qualify row_number() over (partition by ds, item_id order by price, category_id) = 1
