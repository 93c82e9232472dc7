"""Converters from public data sets to raw TIR logs (DATA.md §1): `movielens`
(MovieLens-1M ratings as trigger-induced requests) and `taobao` (the Taobao/Alimama
display-ad files). Each writes a raw-log directory, the one contract the sample builder,
the pipeline and the experiments read."""
