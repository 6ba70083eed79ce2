"""The evaluation protocol's version, kept beside the attack plans it names (as AutoAttack keeps its ``version``).

Torch-free: the workflow's rerun keys (:mod:`robustsoup.paths`) read it at parse time.
"""

# The version of the evaluation's attack plans (autoattack.attack_plan): bump it when a plan changes, so that
# existing evaluations rerun (2: AutoAttack's standard L1 protocol, APGD-T 5 targets × 1 restart).
EVALUATION_PROTOCOL = 2
