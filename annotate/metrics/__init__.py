"""Pure computations behind the dashboards (no Django): forecasts, agreement, throughput."""
