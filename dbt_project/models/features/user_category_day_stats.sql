{#- Per user, item category and day: real exposures (never sampled negatives) and clicks, for user ×
    category affinity. -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

select
    ds,
    user_id,
    category_id,
    count(*)::bigint as exposures,
    sum(click)::bigint as clicks,
    sum(purchase)::bigint as purchases
from {{ ref('interactions') }}
where {{ days_to_build() }} and category_id is not null and exposure <> 'sampled'
group by ds, user_id, category_id
