{#- The day this export is for: the build's run date, unless the reading session names its own day
    (`set variable tandem_ds = date 'YYYY-MM-DD'`, what outputs/warehouse.py export_day does): a
    night's export reads its own day, whichever night's build ran last. -#}
{%- set day = "coalesce(getvariable('tandem_ds'), " ~ run_date() ~ ")" -%}
{#- The items a learned retrieval source may offer on the run date (mtl_model.learn.retrieval): every
    in-stock item of the day's snapshot, with its category, price and item features as of the end of
    the run date, exactly the item columns `scoring_candidates` joins (`feature_joins`). Score builds
    the rows of the retrieval candidates from it (mtl_model.outputs.score). -#}
select s.item_id, s.category_id, s.price, s.title, columns('^f_i_')
from {{ ref('items') }} as s
left join (select * from {{ ref('item_features') }} where ds = {{ day }}) as itf using (item_id)
where s.ds = {{ day }} and s.in_stock
order by s.item_id
