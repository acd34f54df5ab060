{#- The day this export is for: the build's run date, unless the reading session names its own day
    (`set variable tandem_ds = date 'YYYY-MM-DD'`, what outputs/warehouse.py export_day does): a
    night's export reads its own day, whichever night's build ran last. -#}
{%- set day = "coalesce(getvariable('tandem_ds'), " ~ run_date() ~ ")" -%}
{#- The user × category features as of the end of the run date for the users active on it: the
    columns `scoring_candidates` joins (`feature_joins`), for the pairs a learned retrieval source
    offers (mtl_model.outputs.score builds their rows from it). -#}
select ucf.user_id, ucf.category_id, columns('^f_uc_')
from {{ ref('user_category_features') }} as ucf
where ucf.ds = {{ day }}
  and ucf.user_id in (select distinct user_id from {{ ref('stg_events') }} where ds = {{ day }})
order by ucf.user_id, ucf.category_id
