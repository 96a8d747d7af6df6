"""Data shipped with drossel: the Exchange catalog (JSON) and Microsoft's hosted-mail families."""
