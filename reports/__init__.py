"""Study reports: `reports.report.build_report(db, out_pdf)` and the `rayder-report` console script."""
