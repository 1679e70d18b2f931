"""The executors of a K-fold job list: serial, local and ray, one module each, looked up by
name in :mod:`raynn.kfold.executors.factory`. (Empty on purpose: a worker process that
imports one executor does not import the others, or Ray.)"""
