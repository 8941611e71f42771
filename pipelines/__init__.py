"""KFP pipeline definitions (wiring only); YAML config presets live in pipelines/configs/."""
