{#- The business date of a UTC timestamp, in the business_tz setting (TANDEM_BUSINESS_TZ). -#}
{% macro business_date(ts) -%}
  cast(timezone({{ sql_string(setting('business_tz')) }}, cast({{ ts }} as timestamptz)) as date)
{%- endmacro %}

{#- Reason a landed event row cannot be staged, or null when it is valid. One place for the rules,
    used by stg_events (keeps reason is null) and stg_events_quarantine (keeps the rest).
    Late events (business date before the folder's ds) stay valid up to `late_days_allowed` days:
    they count in the day they landed (see stg_events). -#}
{% macro event_reject_reason() -%}
  case
    when event_id is null then 'null_event_id'
    when user_id is null then 'null_user_id'
    when item_id is null then 'null_item_id'
    when event_time is null then 'null_event_time'
    when lower(event_type) not in {{ sql_string_list(setting('event_types')) }}
      or event_type is null then 'unknown_event_type'
    when price < 0 or price > 1e7 then 'price_out_of_range'
    when {{ business_date('event_time') }} > ds then 'future_event_time'
    when {{ business_date('event_time') }} < ds - interval ({{ int_setting('late_days_allowed') }}) day then 'late_beyond_allowed'
  end
{%- endmacro %}
