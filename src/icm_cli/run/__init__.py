"""Floor 5 (run): one labelling run and what is done with its labels.

A run's phases (`runner`: search, calibrate, choose the reading, transfer, check; its records in
`run_records`, rows out in order by `row_emitter`); the checkpoint beside OUT (`checkpoint`);
the gold-free signal check (`signal_check`); when labels average in the zero-shot reading
(`zero_shot_rule`); class shares reported and warned about (`class_shares`); the dry run
(`dry_run`); what `icm label` is asked to do (`label_job`); the Ray engine (`ray_engine`,
`ray_input`, `ray_shards`, `ray_actors`, `ray_labelling`); the method comparison (`compare`);
fine-tuning formats (`export`); the review queue (`review_export`, `label_studio_export`,
`argilla_export`); the push to the Hub (`hub_push`); the report page (`report_data`,
`report_plots`, `report_html`); the starter config (`starter`).

May import: every floor below (foundation, data, backends, algorithm); never commands.
"""
