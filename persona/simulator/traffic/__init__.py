"""Closed-loop traffic: simulated customers call the live serving endpoint over simulated days.

The simulator's hidden ground truth decides what each customer does with what was served
(clicks, applies, purchases, dismissals, with fatigue); the outcomes go back through
``/v1/events``. Only this package (inside :mod:`persona.simulator`) reads the ground truth;
serving sees HTTP requests and events, as it would from the bank's apps.
"""
