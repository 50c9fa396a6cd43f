"""Campaign lift against the randomised holdout: the estimators
(`estimator`), one day's per-listener facts (`facts`) and the measurement that
follows exposed listeners and builds campaign_lift (`measure`). Pure functions;
`pipelines.beam.lift` runs them on Arrow batches."""
