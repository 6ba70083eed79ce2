# Model soups (Croce et al. 2023): the soups on lines between the base models
# (mixed here, evaluated by evaluate_model, drawn by report_soups); a soup of
# the four base models chosen per shift on a few labelled images, tested held
# out, against the base models and output ensembles (Sec. 4); the L∞/L2/L1
# triangle.


rule make_soup:
    input:
        ingredients=lambda w: list(P.soup_ingredients(w.soup).values()),
        train=P.data["train"],
    output:
        weights=P.model("{soup}"),
        sidecar=P.model("{soup}", ".json"),
    log:
        f"logs/make_soup/{RUN}/{{soup}}.log",
    benchmark:
        f"benchmarks/make_soup/{RUN}/{{soup}}.tsv"
    conda:
        ENV
    params:
        ingredients=lambda w: P.soup_ingredients(w.soup),
        weights=lambda w: P.soup_weights(w.soup),
        rerun=P.rerun("make_soup"),
    message:
        "Mixing {wildcards.soup}"
    script:
        "../scripts/make_soup.py"


rule select_soups:
    input:
        **P.corrupted_input("adapt"),
        models=list(P.models(P.base_models).values()),
        adapt=P.data["adapt"],
        shifts=P.shift_dirs(),
    output:
        scores=f"{RESULTS}/soups/scores.tsv",
        selection=f"{RESULTS}/soups/selection.tsv",
    log:
        f"logs/select_soups/{RUN}.log",
    benchmark:
        f"benchmarks/select_soups/{RUN}.tsv"
    priority: 30
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        models=P.models(P.base_models),
        shifts=P.shift_splits("adapt"),
        rerun=P.rerun("select_soups"),
    message:
        "Choosing a soup per shift"
    script:
        "../scripts/select_soups.py"


rule evaluate_soups_shifts:
    input:
        **P.corrupted_input("test"),
        models=list(P.models(P.base_models).values()),
        test=P.data["test"],
        shifts=P.shift_dirs(),
        selection=rules.select_soups.output.selection,
    output:
        metrics=f"{RESULTS}/metrics/soups/shifts.tsv",
        points=P.soups_points(),
        models=f"{RESULTS}/soups/models.tsv",
    log:
        f"logs/evaluate_soups_shifts/{RUN}.log",
    benchmark:
        f"benchmarks/evaluate_soups_shifts/{RUN}.tsv"
    priority: 20
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        models=P.models(P.base_models),
        shifts=P.shift_splits("test"),
        rerun=P.rerun("evaluate_soups_shifts"),
    message:
        "Testing base models, ensembles and chosen soups on every shift"
    script:
        "../scripts/evaluate_soups_shifts.py"


rule evaluate_ternary:
    input:
        models=list(P.models(config["soups"]["ternary"]["models"]).values()),
        test=P.data["test"],
    output:
        metrics=f"{RESULTS}/metrics/soups/ternary.tsv",
    log:
        f"logs/evaluate_ternary/{RUN}.log",
    benchmark:
        f"benchmarks/evaluate_ternary/{RUN}.tsv"
    priority: 20
    conda:
        ENV
    threads: job_threads()
    resources:
        gpu=1,
    params:
        models=P.models(config["soups"]["ternary"]["models"]),
        rerun=P.rerun("evaluate_ternary"),
    message:
        "Clean and robust accuracy over the triangle of soups"
    script:
        "../scripts/evaluate_ternary.py"


rule report_soups:
    input:
        **P.ternary_input(),
        shifts=rules.evaluate_soups_shifts.output.metrics,
        models=rules.evaluate_soups_shifts.output.models,
        selection=rules.select_soups.output.selection,
        ledger=rules.report_lp.output.all,
    output:
        table_csv=report_csv(P.table("soups_shifts", ".csv"), "soups", "soups_shifts"),
        table_md=P.table("soups_shifts"),
        table_page=report_page(P.table("soups_shifts", ".html"), "soups", "Tables", "soups_shifts"),
        figures=P.soups_figures(),
        figures_pdf=P.soups_figures(".pdf"),
        figure_pages=[
            report_page(path, "soups", "Figures", name) for name, path in P.soups_figures_by_name(".html").items()
        ],
        grid=f"{RESULTS}/soups/grid.tsv",
        line_figures=P.soup_line_figures(),
        line_figures_pdf=P.soup_line_figures(".pdf"),
        line_figure_pages=[
            report_page(P.soup_line_figure(a, b, ".html"), "soups", "Figures", "soup_line", soup_line_label(a, b))
            for a, b in config["soups"]["lines"]
        ],
    log:
        f"logs/report_soups/{RUN}.log",
    benchmark:
        f"benchmarks/report_soups/{RUN}.tsv"
    conda:
        ENV
    params:
        figures=P.soups_figures_by_name(),
        rerun=P.rerun("report_soups"),
    message:
        "Writing the soups table and figures, the soup grid and the soup-line figures"
    script:
        "../scripts/report_soups.py"
