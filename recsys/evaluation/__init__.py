"""Evaluation: ranking and beyond-accuracy metrics, full-ranking evaluation, paired bootstrap and lineage, the promotion gate's rules, scoring the champion, reports and plots."""
