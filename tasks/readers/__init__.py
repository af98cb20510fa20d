"""Dataset readers: real file formats in, typed records (tasks/records.py) out.

Each reader module handles one source family and raises :class:`DataError` naming the file
and the record for anything malformed.  Readers never import the model.
"""
