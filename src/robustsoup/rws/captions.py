"""What the Robust Weight Signatures study's report items are called and what its tables show.

Torch-free: the workflow reads the labels when it parses (``workflow/rules/common.smk``).
"""

from __future__ import annotations

from ..report.captions import ReportSection

RWS_REPORT = ReportSection(
    category="3. Robust weight signatures",
    labels={
        "rws_table1": "Storage, clean and corruption accuracy (Table 1)",
        "rws_table4": "Per corruption, without and with the signature (Table 4)",
        "rws_oracle_free": "Oracle-free patching",
        "rws_transfer": "Signatures transferred to other standard models",
        "rws_lambda": "Accuracy against the coefficient λ",
        "rws_layer_norms": "Signature norm per layer",
        "rws_compose": "Two signatures composed",
    },
    captions={
        "rws_table1": (
            "Robust Weight Signatures (Cai et al. 2023), the paper's Table 1: storage, clean accuracy (TA, after "
            "removing the patch) and mean corruption accuracy (RA) of the standard model, the data-augmentation "
            "baseline, all experts (oracle), and the standard model patched with signatures over all layers, the "
            "shallow k layers and quantized, plus the oracle-free mode."
        ),
        "rws_table4": (
            "Robust Weight Signatures, the paper's Table 4: per corruption, the standard model without and with its "
            "signature (the deployed variant), with the expert and the data-augmentation baseline for reference."
        ),
        "rws_oracle_free": (
            "Oracle-free patching: how often a corruption classifier on shallow features picks the right signature "
            "for a batch, and the accuracy that buys against the oracle (the right signature always) and the "
            "unpatched standard model."
        ),
        "rws_transfer": (
            "Transfer: signatures extracted against the standard model, patched onto other standard models of the "
            "same architecture (another seed, with its own or the shared initialization): does the gain carry over?"
        ),
    },
)
