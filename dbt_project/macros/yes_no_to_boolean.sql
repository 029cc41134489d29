{#-
    'Yes' → true, 'No' → false, anything else (including null) → null, so an unexpected value
    fails a not_null test instead of silently becoming false.
-#}
{% macro yes_no_to_boolean(column_name) -%}
    case {{ column_name }} when 'Yes' then true when 'No' then false end
{%- endmacro %}
