-- Data quality results keep counts and shares of the rows that broke an expectation, never
-- their values: an unexpected value of customer_id is a customer's id, of another column a
-- customer's attribute. Results recorded before kept a few examples; they go.
update monitoring.data_quality
set results = (
    select coalesce(jsonb_agg(
        case
            when jsonb_typeof(item -> 'observed') = 'object'
            then jsonb_set(item, '{observed}', (item -> 'observed') - 'unexpected_examples')
            else item
        end
        order by position), '[]'::jsonb)
    from jsonb_array_elements(results) with ordinality as elements(item, position)
)
where jsonb_path_exists(results, '$[*].observed.unexpected_examples');
