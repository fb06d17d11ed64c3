"""PyTorch trainer of the semi-supervised SAR-optical matcher (Hughes & Schmitt 2019).

Importing this package does not import torch; the submodules that need it do.
"""
