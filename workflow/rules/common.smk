# The run: the resolved config (robustsoup.run_config), every artifact's name and path
# (P, robustsoup.paths.RunPaths) and what the trainings ask of the machines
# (T, robustsoup.resources.TrainingResources).
# The rules below are getters over P and T; every script receives its paths by name.

from snakemake.exceptions import WorkflowError

from robustsoup.config import ConfigError, write_resolved_config
from robustsoup.data.check import check_run_data
from robustsoup.job_server import start as start_job_server
from robustsoup.paths import RunPaths, alternatives, asked_targets
from robustsoup.distill.captions import DISTILL_REPORT
from robustsoup.lp.captions import LP_REPORT
from robustsoup.report.captions import COST_REPORT, CSV_SUBCATEGORY, report_place
from robustsoup.report.findings import FINDINGS_REPORT
from robustsoup.resources import TrainingResources, check_device, check_external_files, check_nodes
from robustsoup.run_config import resolve_config
from robustsoup.rws.captions import RWS_REPORT
from robustsoup.seeds import seed_folder
from robustsoup.soups.captions import SOUPS_REPORT, soup_line_label

try:  # the schema, every cross-key check, and (in the main process) the data and weights files on disk
    config.update(resolve_config(config))
    P, T = RunPaths(config), TrainingResources(config)
    if workflow.is_main_process:
        check_run_data(config)
        check_external_files(P)
        check_device(config, jobs_run_here=workflow.local_exec)
        check_nodes(config, jobs_run_here=workflow.local_exec)
except ConfigError as error:
    raise WorkflowError(str(error)) from None
DATASET, RESULTS, ENV = P.dataset, P.results, "../envs/robustsoup.yaml"
RUN = seed_folder(DATASET)  # a seed's logs and benchmarks: <rule>/<dataset>/seed-{seed}/


def job_threads():
    """Threads of a job that computes: the config's `threads`, auto = a quarter of --cores
    (1 without --cores: a cluster profile sets threads per rule)."""
    if config["threads"] != "auto":
        return config["threads"]
    try:
        return max(1, workflow.cores // 4)
    except WorkflowError:
        return 1


# Each study's folder of the HTML report, declared beside its report (robustsoup.<study>.captions); the run
# cost's and the findings' are the report package's own (robustsoup.report.captions, robustsoup.report.findings).
REPORT = {
    "lp": LP_REPORT,
    "soups": SOUPS_REPORT,
    "rws": RWS_REPORT,
    "distill": DISTILL_REPORT,
    "cost": COST_REPORT,
    "findings": FINDINGS_REPORT,
}


def report_page(path, study, kind, name, label=None):
    """An .html page in Snakemake's report (it opens inline), captioned by report/<name>.rst."""
    return report(path, caption=f"../report/{name}.rst", **report_place(REPORT, study, kind, name, label))


def report_csv(path, study, name):
    """A table's CSV in the report: a download, listed beside the table's page."""
    return report(path, caption="../report/data_csv.rst", **report_place(REPORT, study, CSV_SUBCATEGORY, name))


wildcard_constraints:
    target=alternatives(P.targets),
    soup="soup-[A-Za-z0-9_.-]+",
    model=alternatives(P.all_models),
    split="train|adapt|test",
    seed=alternatives([str(s) for s in P.seeds]),
