"""Finding F4 (Robust Weight Signatures, Cai et al. 2023) as checkable claims over a run's ledger and the
per-point results of evaluate_rws_model and evaluate_patched (:mod:`robustsoup.report.findings`). Torch-free."""

from __future__ import annotations

from collections.abc import Mapping

from ..report.findings import Claim, Ledger, PointStore, Term, exact_claim, measured_claim, not_computed
from .config import deploy_variant, variant_suffix

STUDY, EVALSET = "rws", "test"
# The paper's Table 4 (VGG-16, shallow 5 layers, 16-bit; severity 5): accuracy without and with the
# signature per corruption, on the data sets whose setting ours can be (CIFAR-10, CIFAR-100).
TABLE4 = {
    "brightness": {"cifar10": (88.41, 90.87), "cifar100": (60.85, 67.06)},
    "contrast": {"cifar10": (41.29, 78.77), "cifar100": (16.11, 60.72)},
    "defocus_blur": {"cifar10": (66.92, 87.14), "cifar100": (37.55, 61.51)},
    "elastic_transform": {"cifar10": (78.38, 81.93), "cifar100": (49.74, 56.01)},
    "fog": {"cifar10": (61.40, 80.57), "cifar100": (30.18, 62.33)},
    "frost": {"cifar10": (70.65, 84.89), "cifar100": (40.73, 56.80)},
    "gaussian_blur": {"cifar10": (56.63, 86.71), "cifar100": (30.80, 60.91)},
    "gaussian_noise": {"cifar10": (50.92, 82.08), "cifar100": (24.79, 52.83)},
    "glass_blur": {"cifar10": (56.36, 78.55), "cifar100": (25.54, 48.48)},
    "impulse_noise": {"cifar10": (39.82, 77.24), "cifar100": (12.01, 49.35)},
    "jpeg_compression": {"cifar10": (80.72, 84.26), "cifar100": (51.18, 53.71)},
    "motion_blur": {"cifar10": (68.98, 86.88), "cifar100": (40.88, 61.42)},
    "pixelate": {"cifar10": (63.92, 87.24), "cifar100": (36.09, 62.05)},
    "saturate": {"cifar10": (85.27, 91.30), "cifar100": (53.55, 66.47)},
    "shot_noise": {"cifar10": (54.38, 84.97), "cifar100": (27.57, 54.81)},
    "snow": {"cifar10": (78.42, 87.49), "cifar100": (48.18, 59.75)},
    "spatter": {"cifar10": (74.36, 88.18), "cifar100": (41.22, 62.98)},
    "speckle_noise": {"cifar10": (55.86, 85.26), "cifar100": (27.81, 54.82)},
    "zoom_blur": {"cifar10": (70.63, 86.02), "cifar100": (43.60, 61.81)},
}


def rws_findings(config: Mapping, ledger: Ledger, points: PointStore) -> list[Claim]:
    """F4: RWS (the deployed variant, oracle) against the standard model in mean corruption accuracy (RA);
    against data augmentation in RA, and the TA each keeps; unpatching restores the model."""
    claims = (
        "standard + RWS beats the standard model in mean corruption accuracy",
        "standard + RWS beats data augmentation in mean corruption accuracy",
        "the standard model (RWS unpatched) keeps more clean accuracy than data augmentation",
        "unpatching restores the standard model (every test prediction unchanged)",
    )
    if not config["rws"]["enabled"]:
        return [not_computed("F4", c, "the RWS study is disabled (rws.enabled)") for c in claims]
    rws, variant = config["rws"], deploy_variant(config)
    suffix = variant_suffix(variant)
    units = [(c, s) for c in rws["corruptions"] for s in rws["eval_severities"]]

    def term(model: str, weight: float, corruption="none", severity=0):
        accuracy = ledger.accuracy(model, EVALSET, corruption, severity, study=STUDY)
        if accuracy is None:
            return None
        got = points.get(model, EVALSET, corruption, severity)
        return Term(weight, accuracy, got, label=f"{model} on {corruption}/{severity}")

    def mean_ra(baseline: str) -> tuple[list, list[str]]:
        terms, missing = [], []
        for corruption, severity in units:
            for model, sign in ((f"rws-{corruption}{suffix}", 1.0), (baseline, -1.0)):
                found = term(model, sign / len(units), corruption, severity)
                (terms.append(found) if found else missing.append(f"{model} on {corruption}/{severity}"))
        return terms, missing

    out = []
    for claim, baseline in zip(claims[:2], ("standard", "augment")):
        terms, missing = mean_ra(baseline)
        if missing:
            out.append(not_computed("F4", claim, f"not measured: {', '.join(missing)}"))
            continue
        ra_rws = 100 * sum(t.accuracy * t.weight for t in terms if t.weight > 0)
        ra_base = 0.0 - 100 * sum(t.accuracy * t.weight for t in terms if t.weight < 0)  # 0.0 −: never "−0.0"
        ours = f"RA {ra_rws:.1f} vs {ra_base:.1f} ({variant}, λ = {rws['lambda']:g})"
        paper = _paper(config, rws["corruptions"]) if baseline == "standard" else ""
        out.append(measured_claim("F4", claim, terms, ours=ours, paper=paper))
    standard, augment = term("standard", 1.0), term("augment", -1.0)
    if standard is None or augment is None:
        out.append(not_computed("F4", claims[2], "no clean row of standard or augment in metrics/all.tsv"))
    else:
        ours = f"TA {100 * standard.accuracy:.1f} vs {100 * augment.accuracy:.1f}"
        out.append(measured_claim("F4", claims[2], [standard, augment], ours=ours))
    out.append(_unpatch(claims[3], rws["corruptions"], suffix, ledger, points, standard))
    return out


def _unpatch(claim, corruptions, suffix, ledger: Ledger, points: PointStore, standard) -> Claim:
    """Every signature's ``-off`` evaluation against the standard model, image by image (and in the ledger)."""
    if standard is None or standard.points is None:
        return not_computed("F4", claim, "no clean per-point results of the standard model")
    differing, n, changed = 0, 0, []
    for corruption in corruptions:
        name = f"rws-{corruption}{suffix}-off"
        accuracy, got = ledger.accuracy(name, EVALSET, study=STUDY), points.get(name, EVALSET)
        if accuracy is None or got is None or len(got) != len(standard.points):
            return not_computed("F4", claim, f"no clean rows or per-point results of {name}")
        differing += int((got != standard.points).sum())
        n += len(got)
        if abs(accuracy - standard.accuracy) > 1e-12:
            changed.append(f"{name} {100 * accuracy:.2f}")
    ours = f"{differing} of {n} predictions differ; TA {100 * standard.accuracy:.2f}"
    note = f"metrics/all.tsv: {', '.join(changed)} ≠ standard" if changed else ""
    return exact_claim("F4", claim, differing + len(changed), n, ours=ours, note=note)


def _paper(config: Mapping, corruptions) -> str:
    """Table 4's mean gain over our corruptions, where the data set is one of its (VGG-16, severity 5)."""
    dataset = config["dataset"]
    pairs = [TABLE4.get(c, {}).get(dataset) for c in corruptions]
    if not pairs or any(p is None for p in pairs):
        return ""
    without, with_ = (sum(p[i] for p in pairs) / len(pairs) for i in (0, 1))
    return f"{with_ - without:+.2f} ({with_:.2f} vs {without:.2f}; Table 4)"
