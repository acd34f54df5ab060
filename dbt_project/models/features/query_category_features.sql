{#- Search query × item category as of the end of day `ds` (30 days ending at ds): how well items of a
    category answer a query. Clicks and exposures of the category's items shown for the query, a
    smoothed CTR and CVR, and the category's share of the query's clicks. Joined to search exposures
    and candidates on (query, category_id); home-feed rows have no query, so these are null there. -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

with windowed as (
    {{ windowed_sums(ref('query_category_day_stats'), ['query', 'category_id'], ['exposures', 'clicks', 'purchases'], 30) }}
)

select
    ds,
    query,
    category_id,
    exposures_30d::double as f_qc_exposures_30d,
    {{ smoothed_rate('clicks_30d', 'exposures_30d', 0.1) }} as f_qc_ctr_30d,
    {{ smoothed_rate('purchases_30d', 'clicks_30d', 0.05) }} as f_qc_cvr_30d,
    clicks_30d / nullif(sum(clicks_30d) over (partition by ds, query), 0) as f_qc_click_share_30d
from windowed
