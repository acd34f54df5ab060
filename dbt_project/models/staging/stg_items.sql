{#- Daily item snapshots, typed, one row per (ds, item_id) (ephemeral). -#}
{{ config(materialized='ephemeral') }}

select
    cast(ds as date) as ds,
    cast(item_id as varchar) as item_id,
    cast(category_id as varchar) as category_id,
    cast(category_path as varchar) as category_path,
    cast(brand as varchar) as brand,
    cast(price as double) as price,
    cast(title as varchar) as title,
    coalesce(cast(in_stock as boolean), true) as in_stock
from {{ source('landing', 'items') }}
where item_id is not null
qualify row_number() over (partition by ds, item_id order by price, category_id) = 1
