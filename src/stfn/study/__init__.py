"""The study: ``stfn demo`` and ``stfn ablate``, and what they write (tables, plots, paired tests).

- :mod:`stfn.study.demo`: the demo on the synthetic benchmark (settings in :mod:`stfn.study.presets`);
- :mod:`stfn.study.protocol`: the two-stage protocol (TSN backbones per stream, then cached features);
- :mod:`stfn.study.ablate`: grids of design choices over seeds (the grids: :mod:`stfn.study.grid`);
- :mod:`stfn.study.analysis`: accuracy per class group of the synthetic benchmark;
- :mod:`stfn.study.significance`: paired tests of two models on the same test videos;
- :mod:`stfn.study.report`, :mod:`stfn.study.plots`: markdown tables, ``report.md`` and PNG plots;
- :mod:`stfn.machine`: the machine a result came from (also used by the benchmarks).

Nothing is imported here, so the CLI reads :mod:`stfn.study.presets` without loading torch.
"""
