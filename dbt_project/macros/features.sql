{#- The as-of days an incremental feature model builds: the run date, or every day up to it. -#}
{% macro feature_days(stats_relation) -%}
  select distinct ds as as_of from {{ stats_relation }} where {{ days_to_build() }}
{%- endmacro %}

{#- sum(measure) over the `days` days ending at as_of (stats aliased s, spine aliased d). -#}
{% macro window_sum(measure, days) -%}
  coalesce(sum(s.{{ measure }}) filter (where s.ds > d.as_of - interval ({{ days }}) day), 0)
{%- endmacro %}

{#- Per as-of day and key: sum(measure) over the `days` days ending at it, one column
    `<measure>_<days>d` per measure. The as-of days are those `days_to_build` builds. -#}
{% macro windowed_sums(stats_relation, keys, measures, days) -%}
    select
        d.as_of as ds,
        {%- for k in keys %} s.{{ k }},{% endfor %}
        {%- for m in measures %}
        {{ window_sum(m, days) }} as {{ m }}_{{ days }}d{{ "," if not loop.last }}
        {%- endfor %}
    from ({{ feature_days(stats_relation) }}) as d
    inner join {{ stats_relation }} as s
        on s.ds <= d.as_of and s.ds > d.as_of - interval ({{ days }}) day
    group by d.as_of{% for k in keys %}, s.{{ k }}{% endfor %}
{%- endmacro %}

{#- (hits + prior · strength) / (trials + strength): a rate pulled towards a prior when trials are few. -#}
{% macro smoothed_rate(hits, trials, prior, strength=20) -%}
  (({{ hits }}) + {{ prior }} * {{ strength }}) / (({{ trials }}) + {{ strength }})
{%- endmacro %}

{#- The user × category features of a pair with no row in user_category_features (no event in its
    30 days), as `select * replace (...)` items: counts 0, click share 0 when the user clicked anything
    (null when the user clicked nothing), CTR the smoothed prior of user_category_features (0.1), and
    the related-category taste of user_category_related 0 (no clicked category related to it). Left
    null, the encoder would fill them with the training median, as if the user had clicked in the
    category (docs/benchmarks.md, "Recommendation lists against the simulator's truth"). Used by
    training_samples and scoring_candidates; mtl_model.outputs.score.uc_no_events is the same rule for
    the retrieval candidates. -#}
{% macro uc_no_event_fill() -%}
    coalesce(f_uc_clicks_30d, 0) as f_uc_clicks_30d,
    coalesce(f_uc_click_share_30d, case when f_u_clicks_30d > 0 then 0.0 end) as f_uc_click_share_30d,
    coalesce(f_uc_ctr_30d, {{ smoothed_rate('0', '0', 0.1) }}) as f_uc_ctr_30d,
    coalesce(f_uc_purchases_30d, 0) as f_uc_purchases_30d,
    coalesce(f_uc_related_30d, 0) as f_uc_related_30d
{%- endmacro %}

{#- Left joins of the point-in-time features as of `as_of` onto exposures / candidates aliased `x`
    (columns user_id, item_id, category_id, query). Used by training_samples (as of the day before each
    exposure) and scoring_candidates (as of the run date). `first_day`..`last_day` bound the as-of
    days that can match, so each join builds only those days (the feature tables hold every day). -#}
{% macro feature_joins(as_of, first_day, last_day) -%}
{%- for relation, alias, keys in [
      ('user_features', 'uf', ['user_id']),
      ('item_features', 'itf', ['item_id']),
      ('user_category_features', 'ucf', ['user_id', 'category_id']),
      ('user_category_related', 'ucr', ['user_id', 'category_id']),
      ('query_category_features', 'qcf', ['query', 'category_id'])] %}
left join (
    select * from {{ ref(relation) }} where ds between {{ first_day }} and {{ last_day }}
) as {{ alias }}
    on {% for k in keys %}{{ alias }}.{{ k }} = x.{{ k }} and {% endfor %}{{ alias }}.ds = {{ as_of }}
{%- endfor %}
{%- if int_setting('history_length') > 0 %}
left join (
    select * from {{ ref('user_history') }} where ds between {{ first_day }} and {{ last_day }}
) as uh
    on uh.user_id = x.user_id and uh.ds = {{ as_of }}
{%- endif %}
{%- endmacro %}

{#- The feature columns the model reads (all numeric, prefixed f_), the price relative to the
    user's usual price level and the user's behaviour sequence (hist_*, null lists when history_length is 0). -#}
{% macro feature_columns() -%}
    columns('^f_(u|i|uc|qc)_'),
    x.price / nullif(uf.f_u_avg_clicked_price_30d, 0) as f_x_price_vs_user_level,
    {%- if int_setting('history_length') > 0 %}
    uh.hist_item_ids, uh.hist_category_ids, uh.hist_event_types, uh.hist_days_ago
    {%- else %}
    cast(null as varchar[]) as hist_item_ids, cast(null as varchar[]) as hist_category_ids,
    cast(null as varchar[]) as hist_event_types, cast(null as integer[]) as hist_days_ago
    {%- endif %}
{%- endmacro %}

{#- The users' non-zero 30-day click shares per category (`user_category_features`) of the days an
    incremental model builds, as DECIMAL(13, 12) `share`: exact sums for `category_correlations`
    and `user_category_related`, whatever order DuckDB's threads add in. -#}
{% macro click_shares() -%}
    select ds, user_id, category_id, f_uc_click_share_30d::decimal(13, 12) as share
    from {{ ref('user_category_features') }}
    where {{ days_to_build() }} and f_uc_click_share_30d > 0
{%- endmacro %}
