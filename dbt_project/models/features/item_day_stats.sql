{#- Per item and day: real exposures (impressions, views, implied views; never sampled negatives:
    features describe behaviour, not the sampler) and their labels, from the interactions. Replaces the
    day (the first build loads every day up to it). -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

select
    ds,
    item_id,
    count(*)::bigint as exposures,
    sum(click)::bigint as clicks,
    sum(cart)::bigint as carts,
    sum(purchase)::bigint as purchases
from {{ ref('interactions') }}
where {{ days_to_build() }} and exposure <> 'sampled'
group by ds, item_id
