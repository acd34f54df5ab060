{#- The day this export is for: the build's run date, unless the reading session names its own day
    (`set variable tandem_ds = date 'YYYY-MM-DD'`, what outputs/warehouse.py export_day does): a
    night's export reads its own day, whichever night's build ran last. -#}
{%- set day = "coalesce(getvariable('tandem_ds'), " ~ run_date() ~ ")" -%}
{#- The user × category features as of the end of the run date for the users active on it: the
    columns `scoring_candidates` joins (`feature_joins`: user_category_features and
    user_category_related, a pair in either), for the pairs a learned retrieval source offers
    (mtl_model.outputs.score builds their rows from it; uc_no_events fills what a pair lacks). -#}
select
    coalesce(ucf.user_id, ucr.user_id) as user_id,
    coalesce(ucf.category_id, ucr.category_id) as category_id,
    columns('^f_uc_')
from (select * from {{ ref('user_category_features') }} where ds = {{ day }}) as ucf
full outer join (select * from {{ ref('user_category_related') }} where ds = {{ day }}) as ucr
    on ucr.user_id = ucf.user_id and ucr.category_id = ucf.category_id
where coalesce(ucf.user_id, ucr.user_id) in (
    select distinct user_id from {{ ref('stg_events') }} where ds = {{ day }}
)
order by 1, 2
