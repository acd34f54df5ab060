{#- The day this export is for: the build's run date, unless the reading session names its own day
    (`set variable tandem_ds = date 'YYYY-MM-DD'`, what outputs/warehouse.py export_day does): a
    night's export reads its own day, whichever night's build ran last. -#}
{%- set day = "coalesce(getvariable('tandem_ds'), " ~ run_date() ~ ")" -%}
{#- Yesterday's recommendations judged by today's behaviour. For the run date D: the top-K lists
    published for D - 1, for the users active on D, against what they clicked and bought on D; next to
    a popularity baseline (the K items clicked by the most users in the `popularity_days` before D, the
    same list for every one of those users). Metrics per recommender: hit_rate (≥ 1 recommended item clicked),
    ndcg (binary relevance = clicked), purchase_hit_rate, catalog_coverage, users_evaluated, and two
    that separate exposure from preference: shown_rate (share of the recommended pairs the user was
    exposed to on D, whatever showed them) and shown_ctr (the share of those exposed pairs clicked).
    A recommender that lists what the current feed shows anyway scores a high hit rate through
    shown_rate; shown_ctr compares how well the lists match the users' taste where they were seen.
    Empty on a first day (nothing published yet). -#}
{%- set k = int_setting('top_k') -%}
{%- set published = adapter.get_relation(database=target.database, schema='main', identifier='recommendations') -%}

with today as (
    select user_id, item_id, max(click) as clicked, max(purchase) as purchased
    from {{ ref('interactions') }}
    where ds = {{ day }} and exposure is distinct from 'sampled'  -- real exposures: drawn negatives were never shown
    group by user_id, item_id
),

relevant as (
    select user_id, sum(clicked) as n_clicked from today group by user_id
),

model_recs as (
    {%- if published %}
    select user_id, item_id, rank, 'model' as recommender
    from {{ source('published', 'recommendations') }}
    where ds = {{ day }} - 1 and rank <= {{ k }}
    {%- else %}
    select null::varchar as user_id, null::varchar as item_id, null::integer as rank, null::varchar as recommender
    where false
    {%- endif %}
),

popular_list as (
    -- by how many users clicked (then clicks, exposures): a click bot's hundred clicks count once
    select item_id, row_number() over (
        order by count(distinct user_id) filter (where click = 1) desc, sum(click) desc, count(*) desc, item_id
    ) as rank
    from {{ ref('interactions') }}
    where ds between {{ day }} - interval ({{ int_setting('popularity_days') }}) day and {{ day }} - 1
      and exposure is distinct from 'sampled'
    group by item_id
    qualify rank <= {{ k }}
),

popular_recs as (
    select u.user_id, p.item_id, p.rank, 'popularity' as recommender
    from (select distinct user_id from model_recs) as u
    cross join popular_list as p
),

judged as (
    select r.recommender, r.user_id, r.rank, r.item_id,
           coalesce(t.clicked, 0) as clicked, coalesce(t.purchased, 0) as purchased,
           (t.user_id is not null)::integer as shown
    from (select * from model_recs union all select * from popular_recs) as r
    inner join relevant as a using (user_id)  -- users active on D
    left join today as t using (user_id, item_id)
),

per_user as (
    select
        j.recommender,
        j.user_id,
        max(j.clicked) as hit,
        max(j.purchased) as purchase_hit,
        sum(j.clicked / log2(j.rank + 1)) as dcg,
        any_value(a.n_clicked) as n_clicked
    from judged as j
    inner join relevant as a using (user_id)
    group by j.recommender, j.user_id
),

ideal as (
    -- ideal DCG for n relevant items: 1/log2(2) + … + 1/log2(min(n, K) + 1)
    select n, sum(1 / log2(i + 1)) over (order by n) as idcg
    from (select range as n, range as i from range(1, {{ k + 1 }}))
),

scored as (
    select p.*, coalesce(p.dcg / i.idcg, 0) as ndcg
    from per_user as p
    left join ideal as i on i.n = least(p.n_clicked, {{ k }})
),

catalog as (
    select count(*) as n from {{ ref('items') }} where ds = {{ day }} - 1 and in_stock
),

metrics as (
    select recommender, 'hit_rate' as metric, avg(hit)::double as value from scored group by recommender
    union all select recommender, 'ndcg', avg(ndcg)::double from scored group by recommender
    union all select recommender, 'purchase_hit_rate', avg(purchase_hit)::double from scored group by recommender
    union all select recommender, 'users_evaluated', count(*)::double from scored group by recommender
    union all select recommender, 'shown_rate', avg(shown)::double from judged group by recommender
    union all
    select recommender, 'shown_ctr', (sum(clicked) / nullif(sum(shown), 0))::double
    from judged group by recommender
    union all
    select r.recommender, 'catalog_coverage', (count(distinct r.item_id) / any_value(c.n))::double
    from (select * from model_recs union all select * from popular_recs) as r, catalog as c
    group by r.recommender
)

select {{ day }} as ds, recommender, metric, {{ k }} as k, round(value, 10) as value
from metrics
order by recommender, metric
