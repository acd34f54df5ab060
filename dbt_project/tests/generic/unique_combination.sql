{#- The combination of `columns` is unique (a small stand-in for dbt_utils.unique_combination_of_columns,
    so the project needs no package download). Checks the run date's rows only. -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as n
from {{ model }}
where ds = {{ run_date() }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
