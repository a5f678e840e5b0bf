"""Admission and moderation: everything a request passes before GPU time is spent, and output screening.

Entry points for other layers (each module's docstring has the details):
  admission.Admission       the facade the conversation layer calls: `await admission.check(request)`
                            -> AdmissionDecision (admitted | review | blocked | rate_limited | banned);
                            also job_started / job_finished / submission_failed, and .review/.strikes/.audit
  review.ReviewQueue        prompts held for a moderator; approve / reject; claim_decided() in `imagine serve`
  strikes.StrikeBook        strikes and bans (persisted)
  audit.AuditLog            append-only log of moderator actions, record_refused() for adapters
  images.NudityScreener     the engine's ImageScreener hook; images.withheld_version(image, mode)
  prompts.PromptModerator   prompt verdicts (normalise -> terms -> rules -> meaning); verdict.Verdict
  limits.RateLimiter        async interface; limits.InMemoryRateLimiter the embedded implementation
  messages                  every user-facing string of this package
The policy (term lists, rules, exemplars, thresholds, image classes) is data: config/moderation.toml.
"""
