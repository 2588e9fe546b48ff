"""Empirical privacy audits (evidence, not proof): the canary audit of DP fine-tuning."""

from dpsynth.audit.canaries import AuditSettings, Canary, exposure, run_canary_audit, score_continuations

__all__ = ["AuditSettings", "Canary", "exposure", "run_canary_audit", "score_continuations"]
