-- Master data (CONTRACT 2.2). PUT creates or replaces; codes are the keys partners use.
CREATE TABLE sites (
    code        text PRIMARY KEY,
    name        text NOT NULL,
    tz          text NOT NULL DEFAULT 'UTC',
    geofence    text,                 -- code of the geofence around the site's yard
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE locations (
    code        text PRIMARY KEY,
    site        text NOT NULL REFERENCES sites (code),
    type        text NOT NULL CHECK (type IN ('internal', 'dock', 'staging', 'vehicle', 'supplier', 'customer',
                                              'returns', 'inventory_loss')),
    name        text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX locations_site ON locations (site);

CREATE TABLE profiles (
    code          text PRIMARY KEY,
    temp_min_c    double precision NOT NULL,
    temp_max_c    double precision NOT NULL,
    rh_min_pct    double precision,
    rh_max_pct    double precision,
    delay_s       integer NOT NULL DEFAULT 300 CHECK (delay_s >= 0),
    hysteresis_c  double precision NOT NULL DEFAULT 0.5 CHECK (hysteresis_c >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (temp_min_c < temp_max_c)
);

CREATE TABLE items (
    sku         text PRIMARY KEY,
    name        text NOT NULL,
    gtin        char(14) UNIQUE,      -- normalised GTIN-14, check digit verified
    profile     text REFERENCES profiles (code),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE geofences (
    code         text PRIMARY KEY,
    type         text NOT NULL CHECK (type IN ('circle', 'polygon')),
    lat          double precision,
    lon          double precision,
    radius_m     double precision,
    coordinates  jsonb,               -- [[lon, lat], ...] for polygons (GeoJSON order)
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((type = 'circle' AND lat IS NOT NULL AND lon IS NOT NULL AND radius_m > 0)
        OR (type = 'polygon' AND coordinates IS NOT NULL))
);

CREATE TABLE shipments (
    ref           text PRIMARY KEY,
    origin        text NOT NULL REFERENCES locations (code),
    destination   text NOT NULL REFERENCES geofences (code),
    customer      text NOT NULL REFERENCES locations (code),
    vehicle       text NOT NULL REFERENCES locations (code),
    promised_at   timestamptz,
    profile       text REFERENCES profiles (code),
    lines         jsonb NOT NULL DEFAULT '[]',
    status        text NOT NULL DEFAULT 'planned'
                  CHECK (status IN ('planned', 'loading', 'in_transit', 'arrived', 'delivered', 'cancelled')),
    public_token  text NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX shipments_vehicle ON shipments (vehicle, status);
