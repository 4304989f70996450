-- RFC 8785 (JCS) canonical JSON text inside PostgreSQL, so a DSAR export can be
-- produced, digested and stored as canonical bytes while it streams, without
-- the server parsing every row. Numbers follow ECMAScript's Number::toString
-- of the IEEE double; object members are sorted by UTF-16 code units; strings
-- use the same escapes as RFC 8785 (PostgreSQL's escape_json: \" \\ \b \f \n
-- \r \t, other controls as \u00xx, everything else verbatim).
--
-- The fast paths rely on float8 output being the shortest round-trip form,
-- i.e. extra_float_digits >= 1 (the default since PostgreSQL 12); the
-- exporter sets it explicitly.

-- ECMAScript formatting from the shortest round-trip digits PostgreSQL prints.
CREATE FUNCTION kaireon_jcs_number_slow(x float8) RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SET extra_float_digits = 1 AS $$
DECLARE
    s text;
    neg boolean;
    mant text;
    e int := 0;
    digits text;
    k int;
    n int;
    cand text;
    best text;
    best_n int;
BEGIN
    IF x = 0 THEN
        RETURN '0';  -- also -0
    END IF;
    IF x IN ('Infinity'::float8, '-Infinity'::float8, 'NaN'::float8) THEN
        RAISE EXCEPTION 'number not representable in JSON' USING ERRCODE = '22003';
    END IF;
    s := x::text;
    neg := left(s, 1) = '-';
    IF neg THEN
        s := substr(s, 2);
    END IF;
    IF position('e' IN s) > 0 THEN
        mant := split_part(s, 'e', 1);
        e := split_part(s, 'e', 2)::int;
    ELSE
        mant := s;
    END IF;
    -- value = 0.digits x 10^n
    IF position('.' IN mant) > 0 THEN
        n := position('.' IN mant) - 1 + e;
        digits := replace(mant, '.', '');
    ELSE
        n := length(mant) + e;
        digits := mant;
    END IF;
    WHILE left(digits, 1) = '0' LOOP
        digits := substr(digits, 2);
        n := n - 1;
    END LOOP;
    digits := rtrim(digits, '0');
    k := length(digits);
    -- PostgreSQL's Ryu excludes the rounding interval's bounds, so for doubles
    -- above 2^53 it can print 17 digits where a 16-or-fewer-digit decimal also
    -- round-trips (strtod breaks the tie to even). ECMAScript wants the
    -- shortest: keep shortening while the nearest shorter decimal round-trips.
    IF k >= 16 THEN
        FOR p IN REVERSE k - 1 .. 1 LOOP
            cand := round(digits::numeric / (10::numeric ^ (k - p)))::text;
            -- (rounding up next to the largest double would overflow the cast)
            EXIT WHEN (cand || 'e' || (n - p)::text)::numeric > '1.7976931348623157e308'::numeric
                   OR (cand || 'e' || (n - p)::text)::float8 <> abs(x);
            best := rtrim(cand, '0');
            best_n := n - p + length(cand);
        END LOOP;
        IF best IS NOT NULL THEN
            digits := best;
            n := best_n;
            k := length(digits);
        END IF;
    END IF;
    IF k <= n AND n <= 21 THEN
        s := digits || repeat('0', n - k);
    ELSIF 0 < n AND n <= 21 THEN
        s := left(digits, n) || '.' || substr(digits, n + 1);
    ELSIF -6 < n AND n <= 0 THEN
        s := '0.' || repeat('0', -n) || digits;
    ELSE
        s := left(digits, 1) || CASE WHEN k > 1 THEN '.' || substr(digits, 2) ELSE '' END
             || 'e' || CASE WHEN n - 1 >= 0 THEN '+' ELSE '-' END || abs(n - 1)::text;
    END IF;
    RETURN CASE WHEN neg THEN '-' || s ELSE s END;
END $$;

-- Inlinable: in [1e-4, 1e15) PostgreSQL's plain notation is already ECMAScript's.
CREATE FUNCTION kaireon_jcs_number(x float8) RETURNS text
LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN x = 0 THEN '0'
                WHEN abs(x) >= 1e-4 AND abs(x) < 1e15 THEN x::text
                ELSE kaireon_jcs_number_slow(x) END
$$;

-- Sort key giving UTF-16 code-unit order under COLLATE "C" (code-point order):
-- the two differ only for U+E000..U+FFFF against supplementary characters,
-- which UTF-16 puts first; prefixing the former with U+10FFFF restores that.
CREATE FUNCTION kaireon_jcs_sort_key(k text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN octet_length(k) = length(k) THEN k
                ELSE regexp_replace(k, '([\uE000-\uFFFF])', E'\U0010FFFF\\1', 'g') END
$$;

-- Canonical text of any jsonb value. Written without per-object queries (keys
-- come from a jsonpath call and are insertion-sorted) because it runs per row.
CREATE FUNCTION kaireon_jcs(j jsonb) RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE AS $$
DECLARE
    ks jsonb;
    keys text[];
    sort_keys text[];
    k text;
    sk text;
    v jsonb;
    r text;
    i int;
    p int;
    n int;
BEGIN
    IF j IS NULL THEN
        RETURN NULL;
    END IF;
    CASE jsonb_typeof(j)
    WHEN 'object' THEN
        ks := jsonb_path_query_array(j, '$.keyvalue().key');
        n := jsonb_array_length(ks);
        IF n = 0 THEN
            RETURN '{}';
        END IF;
        keys := ARRAY[]::text[];
        sort_keys := ARRAY[]::text[];
        FOR i IN 0 .. n - 1 LOOP
            k := ks ->> i;
            sk := kaireon_jcs_sort_key(k);
            p := i;
            keys := keys || k;
            sort_keys := sort_keys || sk;
            WHILE p >= 1 AND sort_keys[p] COLLATE "C" > sk COLLATE "C" LOOP
                keys[p + 1] := keys[p];
                sort_keys[p + 1] := sort_keys[p];
                p := p - 1;
            END LOOP;
            keys[p + 1] := k;
            sort_keys[p + 1] := sk;
        END LOOP;
        r := NULL;
        FOREACH k IN ARRAY keys LOOP
            v := j -> k;
            r := CASE WHEN r IS NULL THEN '' ELSE r || ',' END || to_json(k)::text || ':' ||
                 CASE jsonb_typeof(v)
                     WHEN 'string' THEN v::text
                     WHEN 'boolean' THEN v::text
                     WHEN 'null' THEN 'null'
                     WHEN 'number' THEN kaireon_jcs_number(v::float8)
                     ELSE kaireon_jcs(v)
                 END;
        END LOOP;
        RETURN '{' || r || '}';
    WHEN 'array' THEN
        n := jsonb_array_length(j);
        IF n = 0 THEN
            RETURN '[]';
        END IF;
        r := kaireon_jcs(j -> 0);
        FOR i IN 1 .. n - 1 LOOP
            r := r || ',' || kaireon_jcs(j -> i);
        END LOOP;
        RETURN '[' || r || ']';
    WHEN 'number' THEN
        RETURN kaireon_jcs_number(j::float8);
    ELSE
        RETURN j::text;
    END CASE;
END $$;
