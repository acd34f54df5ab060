{#- One row per item in the run date's snapshot. Replaces the day (the first build loads every day up to it). -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

select ds, item_id, category_id, category_path, brand, price, title, in_stock
from {{ ref('stg_items') }}
where {{ days_to_build() }}
