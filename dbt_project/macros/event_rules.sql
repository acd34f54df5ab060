{#- Reason a landed event row cannot be staged, or null when it is valid. One place for the rules,
    used by stg_events (keeps reason is null) and stg_events_quarantine (keeps the rest). -#}
{% macro event_reject_reason() -%}
  case
    when event_id is null then 'null_event_id'
    when user_id is null then 'null_user_id'
    when item_id is null then 'null_item_id'
    when event_time is null then 'null_event_time'
    when lower(event_type) not in ('impression', 'view', 'click', 'cart', 'fav', 'purchase')
      or event_type is null then 'unknown_event_type'
    when price < 0 or price > 1e7 then 'price_out_of_range'
    when cast(timezone('UTC', cast(event_time as timestamptz)) as date) > ds then 'future_event_time'
  end
{%- endmacro %}
