import * as v from "./vendor.js"; void v;
