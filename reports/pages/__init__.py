"""One module per report page or section; each has `figures(study, fits)` (yields (name, Figure) in order)
and `page_count(n_nvs_benches, n_probe_benches, n_runs, holdout)`. `reports.report.PAGES` lists them in order."""
