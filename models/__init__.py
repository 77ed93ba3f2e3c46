"""Architectures of the ANP-VS paper: LeNet5-Caffe and VGG-16."""
