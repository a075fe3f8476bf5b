"""The approaches, one file each; every module here registers itself on import
(see ``inspectnet.train.approach``)."""
