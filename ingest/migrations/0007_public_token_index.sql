-- The public tracking endpoint looks a token up by its md5 (the token itself is then compared in
-- constant time); without this index every anonymous request would scan all shipments.
CREATE INDEX shipments_public_token_md5 ON shipments (md5(public_token));
