{#- Per search query, item category and day: search exposures, clicks and purchases (search scene only;
    home-feed exposures have no query). -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

select
    ds,
    query,
    category_id,
    count(*)::bigint as exposures,
    sum(click)::bigint as clicks,
    sum(purchase)::bigint as purchases
from {{ ref('interactions') }}
where {{ days_to_build() }} and exposure <> 'sampled' and scene = 'search' and query is not null and category_id is not null
group by ds, query, category_id
