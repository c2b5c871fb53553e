"""The RayDer family (arXiv 2605.31535): `config` (ModelConfig, PRESETS), `blocks`, `masks`, `model` (RayDer),
`flops` (analytic FLOPs, `rayder-flops`). Registered in `rayder_core.models`. Import the submodules directly; this
package imports nothing (the shared `rayder_core.attention` imports `masks`, which must not pull in the model)."""
