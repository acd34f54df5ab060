{#- Which categories the same users click, as of the end of day `ds`: across the users who clicked
    anything in the 30 days ending at ds, the Pearson correlation of two categories' click shares
    (`f_uc_click_share_30d`, 0 where the user clicked nothing in the category). For each category a,
    the `related_categories` categories b most correlated with it (by |correlation|; none when the
    setting is 0): a user's taste reaches at most that many categories from each they click.
    Computed from sums over the users' non-zero shares, in DECIMAL so the sums are exact: a rebuild
    gives the same bytes whatever order DuckDB's threads add in. -#}
{{ config(materialized='incremental', incremental_strategy='append', pre_hook="{{ delete_run_date() }}") }}

with shares as ({{ click_shares() }}),

moments as (
    select
        m.ds,
        m.category_id,
        c.n,
        m.sum_share::double / c.n as mean,
        sqrt(greatest(m.sum_square::double / c.n - (m.sum_share::double / c.n) ^ 2, 0)) as sd
    from (
        select ds, category_id, sum(share) as sum_share, sum(share * share) as sum_square
        from shares
        group by ds, category_id
    ) as m
    inner join (
        select ds, count(distinct user_id)::double as n from shares group by ds
    ) as c on c.ds = m.ds
),

co_clicked as (
    select a.ds, a.category_id as category_a, b.category_id as category_b, sum(a.share * b.share) as sum_product
    from shares as a
    inner join shares as b
        on b.ds = a.ds and b.user_id = a.user_id and b.category_id <> a.category_id
    group by a.ds, a.category_id, b.category_id
),

pairs as (
    select
        a.ds,
        a.category_id as category_a,
        b.category_id as category_b,
        (coalesce(p.sum_product, 0)::double / a.n - a.mean * b.mean) / nullif(a.sd * b.sd, 0) as correlation
    from moments as a
    inner join moments as b on b.ds = a.ds and b.category_id <> a.category_id
    left join co_clicked as p
        on p.ds = a.ds and p.category_a = a.category_id and p.category_b = b.category_id
)

select ds, category_a, category_b, correlation
from pairs
where correlation is not null
qualify row_number() over (
    partition by ds, category_a order by abs(correlation) desc, category_b
) <= {{ int_setting('related_categories') }}
