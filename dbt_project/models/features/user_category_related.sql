{#- A user's taste for a category, read from the categories they click and which categories the same
    users click (`category_correlations`), as of the end of day `ds`: the sum, over the user's other
    categories a that have b among their related ones, of the user's 30-day click share of a times
    the correlation of a and b. It is defined for categories the user never touched, where the user ×
    category counts are all 0: that is what it is for (docs/benchmarks.md, "A user's taste for
    categories they never clicked"). One row per (user with a click in 30 days, category related to
    one of theirs); a pair with no row reads 0 (`uc_no_event_fill`). DECIMAL sums, as in
    `category_correlations`. -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

select
    s.ds,
    s.user_id,
    r.category_b as category_id,
    sum(s.share * r.correlation::decimal(13, 12))::double as f_uc_related_30d
from ({{ click_shares() }}) as s
inner join {{ ref('category_correlations') }} as r
    on r.ds = s.ds and r.category_a = s.category_id
group by s.ds, s.user_id, r.category_b
