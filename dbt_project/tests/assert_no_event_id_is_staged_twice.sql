{#- An event_id staged on the run date was never staged on an earlier day (first landing wins over
    the whole history, stg_events__landed). -#}
select t.event_id, t.ds, e.ds as earlier_ds
from {{ ref('stg_events') }} as t
inner join {{ ref('stg_events') }} as e on e.event_id = t.event_id and e.ds < t.ds
where t.ds = {{ run_date() }}
